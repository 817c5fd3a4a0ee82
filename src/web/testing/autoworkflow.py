"""Ask a question through the autonomous example workflow (one user proxy and one assistant); prints the answer, cost and timing."""

from common import ask

if __name__ == "__main__":
    ask("autonomous", __doc__)
