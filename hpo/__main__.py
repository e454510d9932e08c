import sys

from hpo.cli.main import main

sys.exit(main())
