"""Terminal output: sanitising, the streaming Markdown renderer, plain mode, and the stats line."""

from chatcli.ui.console import UI, format_stats, plain_wanted
from chatcli.ui.markdown import SafeMarkdown, split_finished
from chatcli.ui.sanitize import sanitize
from chatcli.ui.stream import MarkdownStream, PlainStream

__all__ = ["UI", "format_stats", "plain_wanted", "SafeMarkdown", "split_finished", "sanitize", "MarkdownStream", "PlainStream"]
