"""Solutions to the course's exercises, one module per notebook (``s01_soft_value`` ...).

A notebook imports its solutions only when ``SOLUTIONS=1`` (the tests set it), so the
solutions are executed and checked by the notebook's own asserts.
"""
