"""Every side effect of openrea: planning, training, storage. Classes with injected ports."""
