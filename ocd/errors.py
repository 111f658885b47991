"""The one exception type for bad user input.

Messages name the input and say what is allowed, so ComfyUI can show them as they are.
"""


class OCDInputError(ValueError):
    """A user-supplied input is invalid; the message names it and what is allowed."""

    def __init__(self, input_name: str, problem: str):
        self.input_name = input_name
        super().__init__(f"input '{input_name}': {problem}")
