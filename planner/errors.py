"""The one small exception family the CLI catches and shows as a single red line.

Every user mistake is raised as BadInput (exit code 2) naming the file, field and value; a
request that physics or the catalog cannot meet is Infeasible (exit code 3). Anything else is a
bug and may show a traceback.
"""


class PlannerError(Exception):
    exit_code = 1


class BadInput(PlannerError):
    """The user gave something we cannot use: say which input, which field, which value."""

    exit_code = 2


class Infeasible(PlannerError):
    """No plan in the search space meets the SLOs (or the hardware cannot hold the model)."""

    exit_code = 3
