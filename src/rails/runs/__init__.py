"""What the Hydra apps run on: sweep jobs (``jobs``), run records (``record``), checkpoint files
(``checkpoints``) and DDP under Hydra (``ddp``)."""
