"""The vocabulary of the task protocol: the names a task declares and generic code reads.

`Task` (`unified.task_zoo.base`) checks its declarations against these at registration; decoding and evaluation
read them to choose how a task answers, without importing `Task` itself.
"""

MODALITIES = ("image", "video", "audio")
GRAMMARS = ("text", "loc", "time", "val", "int", "options", "embedding")
FIXED_LENGTH = ("loc", "time", "val")  # grammars whose answer has an exact number of tokens (`answer_length`)
ANSWER_MODES = ("generate", "rank", "embed")
MAX_INT_TOKENS = 4  # the "int" grammar's default length limit (`answer_length`)
# what `Task.answer_json` calls an answer of each grammar (a box in pixels, a span in seconds)
ANSWER_TYPES = {"text": "text", "loc": "box", "time": "span", "val": "numbers", "int": "integer",
                "options": "option", "embedding": "embedding"}
# the turns of an imported conversation a task takes (`Task.chat_turn`, `unified.data.conversations`): the user lists
# options; gives media and asks for a description; gives media and asks a question; gives text alone
CHAT_TURNS = ("options", "description", "question", "text")
