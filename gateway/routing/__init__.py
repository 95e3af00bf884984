"""The route table, its matching, and the checks on a request target before any route is chosen."""
