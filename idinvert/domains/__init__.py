"""Where images come from: the synthetic-faces domain and user image folders."""
