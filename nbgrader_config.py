"""nbgrader configuration for the course (see README: "Instructors").

Solutions live in solutions/<assignment>/, the generated learner notebooks in
exercises/<assignment>/. Submissions, autograded notebooks, feedback and the SQLite
gradebook are working state: they stay out of git (.gitignore).
"""
c = get_config()  # noqa: F821  (provided by nbgrader's config loader)

c.CourseDirectory.course_id = "llmcourse"
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "exercises"
c.CourseDirectory.submitted_directory = "submitted"
c.CourseDirectory.autograded_directory = "autograded"
c.CourseDirectory.feedback_directory = "feedback"
c.CourseDirectory.db_url = "sqlite:///gradebook.db"

# A learner who deletes a grade cell gets it back, and it is graded.
c.OverwriteCells.add_missing_cells = True
# Each cell gets at most this many seconds when autograding.
c.ExecutePreprocessor.timeout = 120
c.Execute.timeout = 120
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
