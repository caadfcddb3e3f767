# SPDX-License-Identifier: Apache-2.0
"""`python -m recops ...` is the `recops` command line (also for `torchrun -m recops ...`)."""

import sys

from .cli import main

sys.exit(main())
