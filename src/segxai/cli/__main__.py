import sys

from segxai.cli import main

sys.exit(main())
