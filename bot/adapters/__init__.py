"""Platform adapters: a platform's payload becomes a Message, a Reply becomes its API calls."""
