"""The machinery the encoder-decoder tasks (translation, summarization) share: vocabulary,
Transformer models, batching, noise and beam search. Not a task itself."""
