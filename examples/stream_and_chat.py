"""Stream an answer, then hold a short chat whose follow-up is rewritten from history.

Run: python examples/stream_and_chat.py [INDEX_DIR]
"""

import sys

from rag_papers import Answer, PaperQA, load_settings

index_dir = sys.argv[1] if len(sys.argv) > 1 else None
with PaperQA(load_settings(index_dir=index_dir)) as qa:
    for piece in qa.stream("How is aerodynamic drag predicted from 3D car meshes?"):
        if isinstance(piece, Answer):
            print("\ncited:", [c.title for c in piece.citations])
        else:
            print(piece, end="", flush=True)

    session = qa.chat()
    first = session.ask("Which paper teaches a language model to decide when to retrieve?")
    follow = session.ask("How does it critique its own generations?")
    print("follow-up searched as:", follow.standalone_question)
    print(session.to_markdown())
