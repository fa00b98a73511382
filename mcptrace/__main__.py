import sys

from mcptrace.cli import main

sys.exit(main())
