"""podbrief: the top 5 insights from new podcasts, mailed daily at each user's own hour."""
