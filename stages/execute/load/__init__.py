"""The load: what to send (`plan`), how (`loops`: closed or open), and one pair's requests (`pair`)."""
