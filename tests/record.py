"""Re-record the recorded scenarios after an intended change of a number (tests/scenarios.py):

    .venv/bin/python -m tests.record [NAME ...] [--rtl] [--check] [--list]
"""

import sys

try:
    from tests import scenarios
except ImportError:          # run as a file: tests/ is the script's folder
    import scenarios

if __name__ == "__main__":
    sys.exit(scenarios.main())
