"""The method: the model (ALS and the item-item parts), its blended scores and top lists, the
cold-start bundle, and the Spark engine. Knows nothing of jobs, runs' life cycle or serving."""
