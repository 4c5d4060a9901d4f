"""`python -m agent_eval` is `vao-eval`."""

from agent_eval.cli import main

raise SystemExit(main())
