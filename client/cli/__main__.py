"""``python -m flowd_client.cli``: the same as the ``flowctl`` command."""

import sys

from . import main

sys.exit(main())
