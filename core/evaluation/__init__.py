"""How a model is scored: accuracies (``accuracy``), membership attacks (``attacks``), the fast
re-evaluation after dampening that restarts from the first dampened stage (``prefix``), reports."""
