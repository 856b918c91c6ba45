"""Ask a question over the bundled sample corpus and print the checked answer.

Run: python examples/ask.py [INDEX_DIR]
"""

import sys

from rag_papers import PaperQA, load_settings

index_dir = sys.argv[1] if len(sys.argv) > 1 else None
# notify: the first run ingests the sample corpus into an empty index, and says so.
with PaperQA(load_settings(index_dir=index_dir), notify=print) as qa:
    answer = qa.ask("What does Self-RAG add to retrieval-augmented generation?")

print(answer.text)
for citation in answer.citations:
    print(f"[{citation.marker}] {citation.title} ({citation.paper_id})")
print(f"supported {answer.supported}/{answer.claims}, mode={answer.mode}")
