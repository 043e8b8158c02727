"""Unlearning methods side by side: the methods as declarations (``methods``), running them
(``run``), the protocols they are scored under (``protocol``) and the paper's numbers (``paper``)."""
