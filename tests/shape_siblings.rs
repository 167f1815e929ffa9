//! Shape siblings (`pretrain --shape-siblings K`): the K pairs of a group
//! share everything but the shape of every object, and the dataset view
//! serves them as consecutive items.

use mlrpl_engine::data::dataset::{MultiLabelDataset, POSITIVE};
use mlrpl_engine::data::shape_siblings::ShapeSiblings;
use mlrpl_engine::data::synthetic::{Split, SyntheticSet, CATEGORIES};
use std::sync::Arc;

fn scenes(len: usize) -> Arc<SyntheticSet> {
    Arc::new(SyntheticSet::new(Split::Pretrain, 3, 32).unwrap().with_len(len).unwrap())
}

#[test]
fn siblings_differ_in_every_shape_and_nothing_else() {
    let set = scenes(40);
    let k = 4;
    for index in 0..set.len() {
        let scene = set.scene(index);
        assert_eq!(scene.shape_sibling(0, k), scene, "sibling 0 is the scene itself");
        let group: Vec<_> = (0..k).map(|s| scene.shape_sibling(s, k)).collect();
        for (s, sibling) in group.iter().enumerate() {
            assert_eq!(*sibling, scene.shape_sibling(s, k), "sibling {s} of scene {index} is not deterministic");
            assert_eq!(sibling.background, scene.background);
            assert_eq!(sibling.objects.len(), scene.objects.len());
            for (o, original) in sibling.objects.iter().zip(&scene.objects) {
                assert_eq!(
                    (o.colour, o.large, o.x, o.y, o.radius),
                    (original.colour, original.large, original.x, original.y, original.radius)
                );
            }
        }
        for i in 0..scene.objects.len() {
            let mut categories: Vec<usize> = group.iter().map(|g| g.objects[i].category).collect();
            categories.sort_unstable();
            categories.dedup();
            assert_eq!(categories.len(), k, "scene {index} object {i}: two siblings share a shape");
        }
    }
}

#[test]
fn a_group_of_every_category_covers_all_shapes() {
    let scene = scenes(1).scene(0);
    let c = CATEGORIES.len();
    let mut categories: Vec<usize> = (0..c).map(|s| scene.shape_sibling(s, c).objects[0].category).collect();
    categories.sort_unstable();
    assert_eq!(categories, (0..c).collect::<Vec<_>>());
}

#[test]
fn the_dataset_serves_groups_as_consecutive_items() {
    let base = scenes(6);
    let siblings = ShapeSiblings::new(base.clone(), 3).unwrap();
    assert_eq!((siblings.len(), siblings.groups(), siblings.siblings()), (18, 6, 3));
    assert_eq!(siblings.expand(&[4, 1]), vec![12, 13, 14, 3, 4, 5]);
    for index in 0..siblings.len() {
        let scene = base.scene(index / 3).shape_sibling(index % 3, 3);
        assert_eq!(siblings.scene(index), scene);
        assert_eq!(siblings.image(index).unwrap().data, scene.render(32).data, "item {index}: pixels");
        let positives: Vec<bool> = siblings.labels(index).iter().map(|&l| l == POSITIVE).collect();
        assert_eq!(positives, scene.labels(), "item {index}: labels");
        assert_eq!(siblings.caption(index, 7), scene.caption(7));
    }
    // The group's captions name different shapes; sibling 0's is the set's own.
    assert_eq!(siblings.caption(0, 2), base.caption(0, 2));
    assert_ne!(siblings.caption(0, 2), siblings.caption(1, 2));
    assert!(siblings.item_name(4).ends_with("/1/sibling1"), "{}", siblings.item_name(4));
}

#[test]
fn one_sibling_is_the_set_unchanged_and_too_many_is_an_error() {
    let base = scenes(5);
    let plain = ShapeSiblings::new(base.clone(), 1).unwrap();
    for index in 0..base.len() {
        assert_eq!(plain.scene(index), base.scene(index));
        assert_eq!(plain.caption(index, 1), base.caption(index, 1));
    }
    let err = ShapeSiblings::new(base, CATEGORIES.len() + 1).err().unwrap();
    assert!(err.to_string().contains("--shape-siblings must be between 1 and 10"), "{err:#}");
}
