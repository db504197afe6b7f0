import sys

from tqref.cli import main

sys.exit(main())
