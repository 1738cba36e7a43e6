"""`python -m llmcourse ...`: the course command line (see llmcourse.course.cli)."""
import sys

from llmcourse.course.cli import main

sys.exit(main())
