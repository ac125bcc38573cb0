"""``python -m crm_infra``: the same as the ``crm-infra`` command."""

import sys

from crm_infra.cli import main

sys.exit(main())
