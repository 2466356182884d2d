"""BERT: pre-training with LAMB, fine-tuning on SQuAD and GLUE; checkpoints interchangeable
with Hugging Face and NVIDIA's PyTorch BERT."""
