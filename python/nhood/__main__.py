import sys

from .cli import main

try:
    main()
except (ValueError, TypeError) as e:
    # A problem nhood refuses (kernel larger than the input, unknown backend...):
    # the message names the argument and the rule; a traceback would only bury it.
    sys.exit(f"python -m nhood: error: {e}")
