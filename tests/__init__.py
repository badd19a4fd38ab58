"""The test suites, as ``docs/testing.md`` lists them: each named after the behaviour it proves."""
