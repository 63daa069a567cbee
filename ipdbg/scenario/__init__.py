"""Scenarios: YAML descriptions of a namespace lab, its rules, traffic and the
verdicts expected (docs/scenarios.md).

``schema`` parses and validates a file (pure); ``runner`` builds the lab, sends
the traffic and checks the expectations with why-dropped's machinery.
"""
