"""The composition root: the `finops` command (cli.py) and `finops serve`'s supervisor
(supervisor.py), which start the frontend, the workers and the actors as processes. The only
package that knows every other one; nothing imports it (tests/unit/test_layering.py)."""
