"""Multitask training entry point for `accelerate launch`; the loop lives in `unified.training`.

    accelerate launch training/multitask.py --config training/configs/shapes-small.yaml [key=value ...]
"""

import sys

from unified.errors import UnifiedError
from unified.training import main

if __name__ == "__main__":
    try:
        sys.exit(main())
    except UnifiedError as err:
        print(f"multitask: error: {err}", file=sys.stderr)
        sys.exit(2)
