"""The one error type the command line reports as a user's mistake.

A CourseError says what was wrong with how a command was used or where it was run (an unknown
chapter, a missing folder, a notebook that cannot be exported, no sandbox): `./course` prints its
message and exits with status 2. Any other exception is a bug in the course, and its traceback
is shown.
"""


class CourseError(Exception):
    """A mistake in the use of a course command; its message says what to do."""
