"""Allow ``python -m atoll`` as a synonym of the ``atoll`` console script."""

from atoll.cli import main

main()
