"""`devloop doctor`: command.py gathers the facts with the real tools (kubectl, docker or podman,
tilt, the rendered overlay), facts.py parses what they say, checks.py judges the facts with pure
functions."""
