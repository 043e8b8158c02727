"""The method and nothing else: importance (the paper's equation 3, and SSD's Fisher diagonal),
selective dampening (equation 1), and the rules that choose α without labels (``alpha``). The speed
machinery they call lives in ``core.fast``."""
