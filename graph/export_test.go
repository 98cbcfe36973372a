package graph

// EndWatchers is how many turns' ends are watched for chatStream (tests).
func (r *Resolver) EndWatchers() int {
	r.ends.mu.Lock()
	defer r.ends.mu.Unlock()
	return len(r.ends.turns)
}
