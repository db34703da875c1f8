import sys

from cfaudit.cli.main import main

sys.exit(main())
