"""The model layer: torch modules named as checkpoint keys, preprocessing, tokenizer and weight loading."""
