"""llmcourse: the model package built in the course "How Large Language Models Are Built".

Chapter modules (``llmcourse.tokenizer``, …) are exported from the course notebooks;
``llmcourse.course`` holds the course infrastructure (exporter, grading, command line, data).
Nothing is imported here, so importing the package never runs chapter code.
"""

__version__ = "0.1.0"
