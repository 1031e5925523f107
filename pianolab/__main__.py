import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter, not pianolab's output

from .cli import main  # noqa: E402

raise SystemExit(main())
