"""Ask a question through the sequential example workflow (a researcher, then a writer); prints the answer, cost and timing."""

from common import ask

if __name__ == "__main__":
    ask("sequential", __doc__)
