"""Ask a question through the groupchat example workflow (a planner and a critic in a group chat); prints the answer, cost and timing."""

from common import ask

if __name__ == "__main__":
    ask("groupchat", __doc__)
