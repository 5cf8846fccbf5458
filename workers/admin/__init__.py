"""The admin API: the route table and what a worker does for each route (api.py), the governance
store's keys, teams and customers (directory.py), every worker's circuit states (circuits.py)."""
