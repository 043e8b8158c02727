"""Data sets as declarations (``registry``), the one in-memory form they take (``dataset``), forget
targets and their splits, image decoding, and the CIFAR and image-folder readers."""
