"""The vocabulary of the task protocol: the names a task declares and generic code reads.

`Task` (`unified.task_zoo.base`) checks its declarations against these at registration; decoding and evaluation
read them to choose how a task answers, without importing `Task` itself.
"""

MODALITIES = ("image", "video", "audio")
GRAMMARS = ("text", "loc", "time", "val", "int", "options", "embedding")
FIXED_LENGTH = ("loc", "time", "val")  # grammars whose answer has an exact number of tokens (`answer_length`)
ANSWER_MODES = ("generate", "rank", "embed")
MAX_INT_TOKENS = 4  # the "int" grammar's default length limit (`answer_length`)
