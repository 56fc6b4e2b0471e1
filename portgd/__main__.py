import sys

from portgd.cli import main

sys.exit(main())
