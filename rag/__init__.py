"""Retrieval-augmented question answering over your own documents.

``from rag import RAG`` is the embedded SDK; the CLI (``rag``) and the HTTP API are thin faces over it.
"""
