import sys

from zstream_mp.cli import main

sys.exit(main())
