"""The prompt catalogue (Mandarin first, English second), its rendering for Asterisk, and its completeness check."""
