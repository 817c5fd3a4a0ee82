import sys

from autobots.cli import main

sys.exit(main())
