"""The chat loop and the one-shot `ask`: input, slash commands, streaming a reply, Ctrl-C handling."""
