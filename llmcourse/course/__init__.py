"""Course infrastructure written by hand: data, export, checking and grading."""
